"""Launchers: how the K×R processes of a cohort get started (installed as ``cohort.launch``)."""

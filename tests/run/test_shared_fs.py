"""The node markers of ``cohort.run.shared_fs``, in one process: which marker a node may miss, and
what it says. The collective around them runs in tests/launch/test_two_nodes.py, on two real
SLURM nodes, one of which cannot see the other's run directory."""

from __future__ import annotations

from cohort.run.shared_fs import marker_path, missing_marker, write_marker


def test_every_node_sees_every_marker_of_this_start(tmp_path):
    for node in ("node1", "node2"):
        assert write_marker(tmp_path, node, "start-b") == ""
    assert missing_marker(tmp_path, ["node1", "node2"], "start-b", here="node1") == ""
    assert marker_path(tmp_path, "node2") == tmp_path / "nodes" / "node2.json"


def test_a_missing_marker_names_the_node_the_path_and_the_fix(tmp_path):
    write_marker(tmp_path, "node1", "start-b")
    problem = missing_marker(tmp_path, ["node1", "node2"], "start-b", here="node1")
    assert problem == (
        f"run_dir {tmp_path} is not on a file system every node sees: node node2's marker "
        f"{tmp_path}/nodes/node2.json is missing on node node1; put run_dir on a shared file system "
        f"(NFS, Lustre, ...) that every node mounts at the same path"
    )


def test_a_marker_left_by_an_earlier_start_does_not_count(tmp_path):
    # A requeued job that lands on a node whose local folder holds the first attempt's marker.
    write_marker(tmp_path, "node1", "start-a")
    write_marker(tmp_path, "node2", "start-a")
    write_marker(tmp_path, "node1", "start-b")
    problem = missing_marker(tmp_path, ["node1", "node2"], "start-b", here="node1")
    assert "node node2's marker" in problem


def test_a_node_without_the_run_directory_does_not_create_it(tmp_path):
    run_dir = tmp_path / "run"
    problem = write_marker(run_dir, "node2", "start-b")
    assert problem == f"{run_dir} does not exist on node node2, where rank 0 created it"
    assert not run_dir.exists()

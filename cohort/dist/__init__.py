"""Where the ranks run and how they agree: the mesh (launcher, device, process groups), the
nodes, the placement on GPUs and cores, and the stop signals every rank agrees on."""

"""The StarOS SeGW chassis: topology, backplane, IPC, CLI and the simulated world around it."""

DISTRIBUTION = "staros-segw-sim"

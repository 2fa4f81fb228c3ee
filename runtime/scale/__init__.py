"""Many videos: the (video, output) job list, Slurm shares and scripts, the run report, and Ray."""

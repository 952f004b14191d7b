"""Identity datasets: the on-disk format (README: "Identity dataset format"), its validator, and the synthetic identity."""

"""Identity datasets: the on-disk format (DESIGN.md section 3), its validator, and the synthetic identity."""

"""Transfer learning on Office-Home (paper Table 3): `afictl transfer`."""

"""detbench.solver"""

"""detbench.modeling"""

"""detbench.engine"""

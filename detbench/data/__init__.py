"""detbench.data"""

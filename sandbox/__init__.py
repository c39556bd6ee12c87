"""The simulated world (GitHub, Kubernetes, Argo CD, vcluster) spoken to over HTTP.

Development and test tooling only: product code (envportal/, environments/) never imports it.
"""

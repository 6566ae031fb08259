"""The dock's Qt parts, one widget per module; :mod:`napari_sasd.widget` assembles them.

Qt and napari are imported here, never by the core modules.
"""

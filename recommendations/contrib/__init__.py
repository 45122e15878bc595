"""Ready-made integrations with shop frameworks; each is an app a host adds to INSTALLED_APPS beside ours.

They sit in the top layer: they use the app the way a host would (tracking, the catalog seam, the template tag),
and the app itself never imports them.
"""

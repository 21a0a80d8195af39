"""The inference engine and the HTTP service.

Not built yet: the serving issue adds them.
"""

"""Network builders, the packaged model (an MLflow pyfunc), Grad-CAM and calibration.

Not built yet: the training and serving issues add them.
"""

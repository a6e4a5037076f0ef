"""The models (canal detector, VGG level/grade classifiers, dural-sac segmenters), their data
pipelines and training. Works on arrays; never imports ``grading``."""

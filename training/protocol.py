"""The evaluation protocol's numbers and the feature extractors' names, importable without
TensorFlow: the commands' flag defaults need them before TensorFlow starts (5-10 s), so that
`--help` and a mistyped flag are answered at once.

The counts are the reference protocol's (the BSN code, after TF-GAN): FID between 10,000
generated and 5,000 real training images, the Inception Score on 50,000 generated images in
10 splits, KID in 100 subsets of 1,000.
"""

NUM_FID_SAMPLES = 10_000
NUM_REAL_SAMPLES = 5_000
NUM_IS_SAMPLES = 50_000
IS_SPLITS = 10
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1_000

INCEPTION_2015_NAME = "inception-2015"  # the graph of the published FIDs (training.inception)
KERAS_INCEPTION_V3_NAME = "keras-inceptionv3"
DEFAULT_BATCH_SIZE = 64  # images per extractor forward pass

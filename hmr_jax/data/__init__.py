"""Input data: annotation files, TFDS builder, augmentation, the tf.data pipeline and the synthetic set.

Nothing here imports jax (the pipeline takes process index/count as arguments and yields numpy).
Import submodules directly: `from hmr_jax.data import pipeline, annotations, augment`
(`tfds_builder` imports tensorflow_datasets, so it is not imported here).
"""

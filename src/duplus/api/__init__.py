"""The public Python API, re-exported from :mod:`duplus`: each ``duplus`` command is one typed
function here, and ``duplus.cli`` only parses its options and calls it.

=========================  =====================================================
``duplus segment``         :func:`segment_files` (:func:`segment` in memory)
``duplus train``           :func:`duplus.training.api.train`
``duplus evaluate``        :func:`duplus.metrics.api.evaluate`
``duplus adapt``           :func:`duplus.adapt.api.adapt_checkpoint`
``duplus prognosis``       :mod:`duplus.prognosis`
=========================  =====================================================
"""

from duplus.api.segmentation import Segmentation, as_volume, load_predictor, segment, segment_files

__all__ = ["Segmentation", "as_volume", "load_predictor", "segment", "segment_files"]

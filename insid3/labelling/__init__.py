"""``insid3 label`` and ``insid3 tune``: a folder of images into a dataset from a few examples.

One module per job: ``sources`` (the images and the examples), ``journal`` (exactly once, resumable),
``runner`` (the job, in-process labelling), ``remote`` (labelling through a service), ``writers``
(the output formats), ``tune`` and ``commands``.
"""

FORMATS = ("coco", "yolo", "png", "labelstudio")  # the output formats (``writers.WRITERS``)

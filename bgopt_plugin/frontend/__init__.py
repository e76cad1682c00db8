"""What the hosts share besides the core: options, progress bars and pictures.

``options`` generates command-line options from the parameter table (the ``bgopt`` command
and the Siril script's headless mode), ``progress`` turns engine events into tqdm bars (the
command line and ``progress=True`` in the astropy functions), ``plots`` draws PNGs and the
mask overlay (the command line and the Siril dialog).
"""

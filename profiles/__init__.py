"""The device profiles (YAML), installed as package data: setup.py maps this folder to ``mambaesr_runtime.profiles_data``
and :func:`mambaesr_runtime.profiles.load_profile` reads it through ``fileio.package_dir`` (the package's own folder:
``importlib.resources.files`` needs Python 3.9, and the device side runs on 3.8). This file makes the folder an
importable package; there is no code here."""

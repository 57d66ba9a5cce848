"""The device profiles (YAML), installed as package data: setup.py maps this folder to ``mambaesr_runtime.profiles_data``
and ``profiles.load_profile`` reads it with ``importlib.resources``. This file makes the folder a regular package, which
``importlib.resources.files`` needs on Python 3.8 (JetPack 5); there is no code here."""

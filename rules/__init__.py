"""The bundled rule pack (YAML rule files, and the FHIR mapping and value sets under ``fhir/``)."""
import os

#: This package's directory (read directly: ``importlib.resources`` costs ~6 ms of every start).
DIR = os.path.dirname(os.path.abspath(__file__))

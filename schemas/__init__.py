"""The bundled JSON Schemas (rule files, patient state, result, ...) and the fact wording table."""
import os

#: This package's directory (read directly: ``importlib.resources`` costs ~6 ms of every start).
DIR = os.path.dirname(os.path.abspath(__file__))

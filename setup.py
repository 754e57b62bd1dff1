"""The one thing pyproject.toml cannot declare: serving's optional C fast path (serving/_fastpath.c).

`optional=True`: where no C compiler is available the install still succeeds and the server
answers every request through the Python path, which writes the same bytes, only slower.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("serving._fastpath", ["serving/_fastpath.c"], optional=True)])

"""The package's metadata is in pyproject.toml; this file lets older tools build it too."""

from setuptools import setup

setup()

import pathlib

from setuptools import find_packages, setup


def requirements(name):
    """The requirement lines of the file ``name`` beside this one (comments and blank lines left out)."""
    lines = (pathlib.Path(__file__).resolve().parent / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


setup(
    name="untapped",
    version="0.1.0",
    description=(
        "PyTensor port of 'Inverting VAEs for Improved Generative Accuracy' "
        "(Gemp, Mahadevan, Parente, 2017)"
    ),
    packages=find_packages(include=["untapped", "untapped.*", "parmesan_compat", "parmesan_compat.*"]),
    python_requires=">=3.10",
    install_requires=[
        "pytensor>=3.0,<3.1",
        "Lasagne==0.1",
        "numpy",
        "scipy",
        "scikit-learn",
        "h5py",
        "click",
        "joblib",
        "matplotlib",
    ],
    # pip install -e .[dask]: trials on a Dask cluster (run_mnist.py --backend dask, --scheduler).
    extras_require={"dask": requirements("requirements-dask.txt")},
    entry_points={"console_scripts": ["untapped-reference=untapped.entry_points:reference"]},
)

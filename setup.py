from setuptools import find_packages, setup

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
    entry_points={"console_scripts": ["untapped-reference=untapped.reference:main"]},
)

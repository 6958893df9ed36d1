"""Package map: the design card keeps the packages at the top of the repository
(flows/, services/, annotation/, storage/, infra/); they install under the one
`alignline` namespace so nothing generic like `storage` lands in site-packages."""
from setuptools import find_packages, setup

ROOTS = {
    "alignline": "alignline",
    "alignline.flows": "flows",
    "alignline.services": "services",
    "alignline.annotation": "annotation",
    "alignline.storage": "storage",
    "alignline.infra": "infra",
}

packages = []
for namespace, folder in ROOTS.items():
    packages.append(namespace)
    packages += [f"{namespace}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=ROOTS)

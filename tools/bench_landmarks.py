"""Time facerig.landmarks on a 512x512 photo (scikit-image astronaut()); prints a table (ms).

Run: .venv/bin/python tools/bench_landmarks.py
"""
import os

import numpy as np
from skimage import data

import facerig.landmarks as fl
from facerig.timing import time_runs


def bench(fn, n=60, warm=5):
    """Median, 10th and 90th percentile wall-clock ms of ``n`` runs after ``warm`` untimed ones."""
    t = time_runs(fn, n, warmup=warm)
    return t.median * 1e3, t.percentile(10) * 1e3, t.percentile(90) * 1e3


def main():
    import mediapipe as mp

    img = data.astronaut()
    noise = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    box = fl.detect_landmarks(img)[0].box
    frames = [np.ascontiguousarray(img[40:440, 40 + k: 440 + k]) for k in range(70)]
    tracker = fl.LandmarkTracker(refine=True)
    counter = iter(range(10 ** 9))
    raw478 = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True)
    raw468 = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=False)
    rows = [
        ("detect_faces (full-range)", lambda: fl.detect_faces(img)),
        ("detect_faces (short-range)", lambda: fl.detect_faces(img, model="short")),
        ("detect_landmarks refine=False (468)", lambda: fl.detect_landmarks(img, refine=False)),
        ("detect_landmarks refine=True (478)", lambda: fl.detect_landmarks(img, refine=True)),
        ("detect_landmarks, no face (noise)", lambda: fl.detect_landmarks(noise)),
        ("square_crop 224", lambda: fl.square_crop(img, box, 224)),
        ("LandmarkTracker.process 400x400 (478, smoothed)", lambda: tracker.process(frames[next(counter) % 70])),
        ("raw mediapipe FaceMesh.process (478, reference)", lambda: raw478.process(img)),
        ("raw mediapipe FaceMesh.process (468, reference)", lambda: raw468.process(img)),
    ]
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}")
    print(f"{'operation (512x512 astronaut)':50s} {'median ms':>10s} {'p10':>7s} {'p90':>7s}")
    for name, fn in rows:
        m, lo, hi = bench(fn)
        print(f"{name:50s} {m:10.2f} {lo:7.2f} {hi:7.2f}")


if __name__ == "__main__":
    main()

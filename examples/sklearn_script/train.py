"""Script-mode entry point for example 2 (runs inside the scikit-learn "container").

Training: SageMaker runs `python train.py --C 1.0`, with the training channel in SM_CHANNEL_TRAIN and the
model directory in SM_MODEL_DIR. Inference: the model server imports this file and calls model_fn; the
scikit-learn container's default input_fn / predict_fn / output_fn handle CSV in and out.
"""

import argparse
import os

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    # Hyperparameters arrive as command-line arguments: "--name value", but a one-letter name gets a single
    # dash ("-C 0.5"), as SageMaker's training toolkit writes them.
    parser.add_argument("-C", type=float, default=1.0)
    args = parser.parse_args()

    data = np.loadtxt(os.path.join(os.environ["SM_CHANNEL_TRAIN"], "train.csv"), delimiter=",")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=args.C, max_iter=1000))
    model.fit(data[:, 1:], data[:, 0])  # label in the first column
    print(f"training accuracy: {model.score(data[:, 1:], data[:, 0]):.3f}")
    joblib.dump(model, os.path.join(os.environ["SM_MODEL_DIR"], "model.joblib"))

"""The names of every artifact in a run directory and an export directory: the contract, in one place.

    RUN/  config.json  classes.json  preprocess.json  model.safetensors  last.safetensors  checkpoint.safetensors
          history.json  history.csv  metrics.json  learning_curves.png  confusion_matrix.png/.json  calibration.png
          roc_pr.png  threshold.json  temperature.json  mistakes.png  predictions.csv  report.html  data.json
          manifest.json  export/
    RUN/export/  model.onnx  classes.json  preprocess.json  export.json  [model.int8.onnx  model.tflite
                 saved_model/1/saved_model.pb]
"""

from __future__ import annotations

CONFIG = "config.json"
CLASSES = "classes.json"
PREPROCESS = "preprocess.json"
WEIGHTS_BEST = "model.safetensors"
WEIGHTS_LAST = "last.safetensors"
CHECKPOINT = "checkpoint.safetensors"
HISTORY_JSON = "history.json"
HISTORY_CSV = "history.csv"
METRICS = "metrics.json"
DATA_SPLITS = "data.json"  # each split's fingerprint (data.checks.fingerprint): resume and evaluate compare
LEARNING_CURVES = "learning_curves.png"
CONFUSION_PNG = "confusion_matrix.png"
CONFUSION_JSON = "confusion_matrix.json"
MISTAKES_PNG = "mistakes.png"
CALIBRATION_PNG = "calibration.png"  # reliability diagram: accuracy against confidence
REPORT_HTML = "report.html"  # the evaluation's figures and tables on one page
PREDICTIONS = "predictions.csv"  # per evaluated image: its label, the prediction and its probability
ROC_PR = "roc_pr.png"
THRESHOLD = "threshold.json"
TEMPERATURE = "temperature.json"  # `cnnkit calibrate`: the softmax temperature fitted on held-out data
EVALUATIONS_DIR = "evaluations"  # RUN/evaluations/NAME/: `cnnkit evaluate RUN --data OTHER` results
MANIFEST = "manifest.json"

EXPORT_DIR = "export"
# The exported graph's input and output, named as a TensorFlow Serving client names them.
INPUT_NAME = "images"  # float32 [N, H, W, 3], RGB 0-255
OUTPUT_NAME = "probabilities"  # float32 [N, classes]
ONNX_MODEL = "model.onnx"
ONNX_INT8 = "model.int8.onnx"  # beside model.onnx after `cnnkit export --quantize int8`
EXPORT_INFO = "export.json"
# `cnnkit export --format saved_model | tflite`: TensorFlow Serving's MODEL/VERSION layout, and a LiteRT model.
SAVED_MODEL_DIR = "saved_model"
SAVED_MODEL_VERSION = "1"
TFLITE_MODEL = "model.tflite"
# What a server needs of an export; the export's own manifest is export.json's sha256 table.
EXPORT_FILES = (ONNX_MODEL, CLASSES, PREPROCESS, EXPORT_INFO)

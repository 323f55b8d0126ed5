"""Measuring grains in a folder of micrographs with a trained model, and the results people look at.

  outputs   output names, safety checks (never replace the user's files), the manifest
            (OUT/grain_sizes.json, merged across runs into one OUT) and the lock on OUT
  measure   one image: boundary map, grain table, grain-size summary
  scale     --scale: the image resampled for the model (auto: per image, to the trained grain size),
            the probabilities mapped back to its pixels
  report    overlays, histograms, the combined CSVs, OUT/report.html and the terminal table
  batch     predict_folder: a folder into OUT, stopping cleanly on a full disk or Ctrl-C

`fedtransfer_jax/predict.py` is the command line over these (flags -> predict_folder -> exit status).
"""

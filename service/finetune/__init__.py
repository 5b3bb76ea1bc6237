"""Fine-tune a torchvision classifier on a folder of labelled photos and build a served archive of it.

The steps, one module each: check and split the folder (dataset.py), start from the archive
builder's own weights with a new head (model.py), train on the handler's own preprocessing
(inputs.py, train.py), build the archive with service.archive and write the report beside it
(run.py, report.py). scripts/finetune.py is the command line over `finetune()`; demo.py
generates a folder to try it on. Only requirements.txt packages are imported on this path
(matplotlib, for the report's plot, only if it is installed). Importing the package imports no torch:
the UI uses folders.py.
"""

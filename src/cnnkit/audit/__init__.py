"""`cnnkit audit`: the content of a labelled set and its split under question (wrong labels, near-duplicates and
leaks across splits, outliers and image quality, class balance, bad boxes and masks, annotator agreement, the
annotation effort). Modules here read data and may train out-of-fold models; they sit below `api`."""

"""Level-triggered loops: each pass compares what the database says with what should be, and acts
on the difference. A pass that fails is logged and the next pass tries again."""

"""Label tables (PadChest, public collections), the term tree, label sets, patient-level splits and the split file."""

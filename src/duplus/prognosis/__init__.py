"""Prognosis: survival risk from PET/CT features and EHR text (Cox head, LoRA text encoder),
k-fold cross-validation with C-index, and risk-group Kaplan-Meier plots."""

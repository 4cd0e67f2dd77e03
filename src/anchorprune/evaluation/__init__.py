"""Evaluation: MaxSim scoring, retrieval metrics, score retention and windows, calibration, the grid."""

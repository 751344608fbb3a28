# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Sampling: next-scale images, text, multimodal documents, raster baseline."""

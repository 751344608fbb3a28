# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Reinforcement learning for image outputs: GRPO with prefix tuning."""

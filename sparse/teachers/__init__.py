"""Teachers for distillation (online in training, offline in KD data): dense, sparse, cross-encoder and
seq2seq models, their type registry and the one ensemble that normalizes and averages their scores."""

from sparse.teachers.base import (TEACHER_TYPES, BiEncoderTeacher, Teacher, build_teacher, minmax_per_row,
                                  register_teacher, teacher_types)
from sparse.teachers.cross import CrossEncoderTeacher
from sparse.teachers.dense import DenseTeacher
from sparse.teachers.ensemble import TeacherEnsemble, build_ensemble
from sparse.teachers.splade import SparseTeacher

__all__ = ["TEACHER_TYPES", "BiEncoderTeacher", "Teacher", "build_teacher", "minmax_per_row", "register_teacher",
           "teacher_types", "CrossEncoderTeacher", "DenseTeacher", "SparseTeacher", "TeacherEnsemble",
           "build_ensemble"]

"""Teachers for online distillation: dense, sparse and cross-encoder models and their ensemble."""

from sparse.teachers.base import (TEACHER_TYPES, BiEncoderTeacher, Teacher, build_teacher, minmax_per_row,
                                  register_teacher)
from sparse.teachers.cross import CrossEncoderTeacher
from sparse.teachers.dense import DenseTeacher
from sparse.teachers.ensemble import TeacherEnsemble, build_ensemble
from sparse.teachers.splade import SparseTeacher

__all__ = ["TEACHER_TYPES", "BiEncoderTeacher", "Teacher", "build_teacher", "minmax_per_row", "register_teacher",
           "CrossEncoderTeacher", "DenseTeacher", "SparseTeacher", "TeacherEnsemble", "build_ensemble"]

"""The teacher interface of data synthesis; defined with the domain seam (`steiner.domain.teacher`,
where its conventions are written), re-exported here for the synthesis code that uses it."""

from steiner.domain.teacher import Question, Revealed, Teacher

__all__ = ["Question", "Revealed", "Teacher"]

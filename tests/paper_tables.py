"""Won et al. 2025, Tables 2, 3, 5 and 6, rebuilt as per-case labels.

Matrices are stored with rows = the first rater named, columns = the second. The paper prints
Tables 2 and 3 with Analyzer2 in rows; they are transposed here. Table 5's second row is garbled
in the text; it is rebuilt from the printed margins (C1 column totals 8068 / 2897, C2 8318 / 2647).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

LEVELS = ("rootlet", "cord")
GRADES = ("A", "B", "C", "D")

LEVEL_A1_A2 = np.array([[7693, 694], [399, 2179]]).T  # Table 2
LEVEL_A1_C1 = np.array([[7683, 409], [8068 - 7683, 2897 - 409]])  # Table 5
LEVEL_A2_C2 = np.array([[8180, 207], [8318 - 8180, 2647 - 207]])
GRADE_A1_A2 = np.array([[5312, 107, 3, 0], [422, 832, 18, 8], [4, 152, 263, 15], [1, 31, 22, 92]]).T  # Table 3
GRADE_A1_C1 = np.array([[5512, 226, 1, 0], [205, 859, 48, 10], [2, 71, 218, 15], [0, 21, 20, 74]])  # Table 6
GRADE_A2_C2 = np.array([[5188, 226, 8, 0], [258, 937, 78, 7], [6, 100, 302, 26], [4, 18, 39, 85]])

#: Table 4 (percent). The A1-A2 level accuracy printed there, 90.3, does not follow from Table 2
#: (9872 / 10965 = 90.03%); the printed matrix is what we reproduce.
TABLE4 = {
    ("level", "A1", "A2"): (86.6, 90.0),
    ("level", "A1", "C1"): (90.6, 92.7),
    ("level", "A2", "C2"): (95.6, 96.8),
    ("grade", "A1", "A2"): (76.5, 89.2),
    ("grade", "A1", "C1"): (78.4, 91.5),
    ("grade", "A2", "C2"): (75.7, 89.4),
}


def cases_from_confusion(matrix: np.ndarray, labels, task: str, rater_a: str, rater_b: str, prefix: str):
    """Long label rows: one case per count in the matrix."""
    rows = []
    n = 0
    for i, la in enumerate(labels):
        for j, lb in enumerate(labels):
            for _ in range(int(matrix[i, j])):
                case = f"{prefix}{n:06d}"
                n += 1
                for rater, label in ((rater_a, la), (rater_b, lb)):
                    if task == "level":
                        rows.append({"case_id": case, "rater": rater, "level": label, "grade": ""})
                    else:
                        rows.append({"case_id": case, "rater": rater, "level": "rootlet", "grade": label})
    return pd.DataFrame(rows)


def paper_tables() -> dict[tuple[str, str, str], pd.DataFrame]:
    spec = {
        ("level", "A1", "A2"): LEVEL_A1_A2, ("level", "A1", "C1"): LEVEL_A1_C1, ("level", "A2", "C2"): LEVEL_A2_C2,
        ("grade", "A1", "A2"): GRADE_A1_A2, ("grade", "A1", "C1"): GRADE_A1_C1, ("grade", "A2", "C2"): GRADE_A2_C2,
    }
    return {
        key: cases_from_confusion(m, LEVELS if key[0] == "level" else GRADES, *key, prefix=f"{key[0]}-")
        for key, m in spec.items()
    }

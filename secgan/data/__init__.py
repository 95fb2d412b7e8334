"""Site data: the phantom generator, the BraTS reader and the patient-indexed slice dataset.

Submodules import nibabel lazily where they can; ``coordinator/`` must never import this package's
readers (the coordinator holds no patient data).
"""

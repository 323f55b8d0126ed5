"""The gen message attack (privacy/audit/gen_inversion.py): gradients, the smooth form, end to end."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audit_toy import SEED, _key
from fedtransfer_jax.data.synthetic import make_lab_examples
from fedtransfer_jax.privacy import audit
from fedtransfer_jax.privacy.audit.statistics_inversion import _relative_sq_error


def test_fit_style_is_differentiable_in_the_image_and_the_attack_form_equals_the_message():
    images, labels, _ = make_lab_examples("brightfield", 1, 16, SEED)  # colour: distinct eigenvalues
    fields = ("tone_mean", "profile", "blur")
    grads = audit.fit_style_gradients(images[0], labels[0], _key(5), fields=fields)
    assert grads == {"tone_mean": "finite, non-zero", "profile": "finite, non-zero", "blur": "zero"}
    # (blur is picked by argmin among candidates: gradient zero, the attack leaves it out.) The attacker's
    # smooth form of the message is the message itself when fitted with the true label and the image's own
    # colour axes (guards against fit_style drifting away from gen_attack_statistics).
    msg = jax.jit(audit.gen_message)(jnp.asarray(images[0]), jnp.asarray(labels[0]))
    context = audit.gen_attack_context(labels[0], msg["noise_basis"], 6)
    got = jax.jit(audit.gen_attack_statistics)(jnp.asarray(images[0]), context)
    want = audit.gen_invariants(msg)
    assert set(got) == set(want) == set(audit.GEN_MATCHED_FIELDS)
    for k in want:  # float32 least squares, compiled differently: equal to 1e-3 of the field's scale
        w = np.asarray(want[k])
        atol = 1e-3 * np.abs(w).max() + 1e-9
        np.testing.assert_allclose(np.asarray(got[k]), w, rtol=0, atol=atol, err_msg=k)


def test_the_gen_attack_objective_has_finite_nonzero_gradients_on_a_grey_lab():
    # darkfield is grey: the raw tone_sqrt has a non-finite gradient there; the attack's form must not.
    images, labels, _ = make_lab_examples("darkfield", 2, 16, SEED)
    grads = audit.fit_style_gradients(images[0], labels[0], _key(6), fields=("tone_sqrt",))
    assert grads == {"tone_sqrt": "non-finite"}
    msg = jax.jit(audit.gen_message)(jnp.asarray(images[0]), jnp.asarray(labels[0]))
    context = audit.gen_attack_context(labels[1], msg["noise_basis"], 6)
    target = audit.gen_invariants(msg)
    loss = lambda x: _relative_sq_error(audit.gen_attack_statistics(x, context), target)  # noqa: E731
    g = np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(images[1])))
    assert np.isfinite(g).all() and np.abs(g).max() > 0


def test_gen_inversion_runs_end_to_end_and_is_scored():
    images, labels, _ = make_lab_examples("brightfield", 4, 16, SEED)
    scores, recovered = audit.gen_inversion_audit(images, labels, [0], _key(7), steps=20)
    assert set(scores) == {"gen", "gen/control"} and recovered["gen"].shape == (1, 16, 16, 3)
    assert np.isfinite(recovered["gen"]).all()
    for s in scores.values():
        assert s["n"] == 1
        for k in ("ssim", "psnr", "boundary_f1", "lowpass_corr"):
            assert np.isfinite(s[k]) and np.isfinite(s["baseline_" + k]) and "advantage_" + k in s
    with pytest.raises(ValueError, match=">= 3 images"):
        audit.gen_inversion_audit(images[:2], labels[:2], [0], _key(7), steps=2)

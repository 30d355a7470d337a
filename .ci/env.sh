# The environment CI runs in, sourced by .ci/run (and run by
# tests/ci_env.rs, which checks it). Every CHAINWATCH_* variable is a knob
# for people at a terminal: it shortens a test (seed counts, soak lengths),
# replaces what is tested (CHAINWATCH_BIN, a prebuilt CHAINWATCH_DEB, a
# CHAINWATCH_CONFIG) or reaches every daemon the tests start
# (CHAINWATCH_<SECTION>__<KEY> overrides their config, CHAINWATCH_LOG their
# logging). CI always runs the full default, so each one is unset, whatever
# its name, except CHAINWATCH_VENV: where the emulator (moto) is installed,
# which .ci/deps.sh sets when it is unset and installs into when empty.
# .ci/deps.sh then sets CHAINWATCH_VENV and CHAINWATCH_TEST_CA itself.

for _cw_var in $(compgen -v CHAINWATCH_); do
    case $_cw_var in
        CHAINWATCH_VENV) ;;
        *) unset "$_cw_var" ;;
    esac
done
unset _cw_var

# Tests that need root or a tool fail instead of skipping.
export CI=true
export CARGO_TERM_COLOR=never

/* actstore train — placeholder until its issue lands; replaced by the owner. */
#include "cli.h"

int as_cmd_train(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return as_cli_fail("train", "not available in this build yet");
}

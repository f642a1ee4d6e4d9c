/* fuzz_envelope: libFuzzer target for the Debezium envelope parser. Any bytes must give
 * OK, TOMBSTONE or MALFORMED without a crash, leak or undefined behaviour; an OK change
 * must hold what the contract promises (terminated strings, images the op needs) and
 * give a position key. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "entities/user_change.h"
#include "transport/debezium_envelope.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_image(const struct user_image *img)
{
    /* strnlen within the buffer: a missing terminator is a bug. */
    if (strnlen(img->id, sizeof img->id) != UC_ID_MAX ||
        strnlen(img->email, sizeof img->email) == 0 ||
        strnlen(img->email, sizeof img->email) >= sizeof img->email ||
        strnlen(img->full_name, sizeof img->full_name) >= sizeof img->full_name ||
        strnlen(img->address, sizeof img->address) >= sizeof img->address) {
        abort();
    }
    if (img->has_date_of_birth) {
        char date[16];
        user_change_format_date(img->date_of_birth_days, date);
        if (strnlen(date, sizeof date) >= sizeof date) {
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct user_change c;
    char reason[256];
    char key[UC_POSITION_KEY_MAX];

    if (debezium_envelope_parse((const char *)data, size, &c, reason, sizeof reason) !=
        ENVELOPE_OK) {
        if (strnlen(reason, sizeof reason) >= sizeof reason) {
            abort();
        }
        return 0;
    }
    if ((c.op == CHANGE_CREATE || c.op == CHANGE_READ || c.op == CHANGE_UPDATE) && !c.has_after) {
        abort();
    }
    if ((c.op == CHANGE_UPDATE || c.op == CHANGE_DELETE) && !c.has_before) {
        abort();
    }
    if (c.has_before) {
        check_image(&c.before);
    }
    if (c.has_after) {
        check_image(&c.after);
    }
    user_change_position_key(&c, key, sizeof key);
    if (key[0] == '\0') {
        abort(); /* file and gtid are bounded, so the key always fits */
    }
    return 0;
}

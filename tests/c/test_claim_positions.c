/*
 * test_claim_positions.c - a receive claim names its messages by read position: each
 * position is what read_position holds when that message is the next to receive (a padding
 * frame before it included), so a claim aborted and taken again, by this handle or another,
 * names the same messages the same way, and the positions of consecutive messages follow the
 * frames. shmipc_channel_recv_position gives the first one of the open claim.
 *
 * usage: test_claim_positions CHANNEL   (a fresh frame channel of 4096 bytes)
 */
#include "check.h"

int main(int argc, char **argv) {
    CHECK(argc >= 2);
    shmipc_channel *ch = t_open(argv[1]), *other = t_open(argv[1]);
    CHECK(shmipc_channel_capacity(ch) == 4096);
    shmipc_slice slices[8];
    uint64_t positions[8], position = 99;
    size_t count = 99;
    char big[2000];
    memset(big, 'b', sizeof big);
    shmipc_state st;

    /* no claim open, or no positions array: EINVAL, nothing claimed */
    CHECK_RC(shmipc_channel_recv_position(ch, &position), SHMIPC_EINVAL);
    CHECK_RC(shmipc_channel_recv_claim_positions(ch, slices, NULL, 8, &count, 0, 0),
             SHMIPC_EINVAL);
    CHECK(count == 0);
    CHECK_RC(shmipc_channel_recv_claim_positions(ch, slices, positions, 8, &count, 0, 0),
             SHMIPC_EEMPTY);

    /* frames of 8 + 8 (a 5-byte payload), 8 + 2000, 8 + 8 */
    CHECK_RC(shmipc_channel_send(ch, "first", 5, 0, 0), SHMIPC_OK);
    CHECK_RC(shmipc_channel_send(ch, big, sizeof big, 0, 0), SHMIPC_OK);
    CHECK_RC(shmipc_channel_send(ch, "third", 5, 0, 0), SHMIPC_OK);
    CHECK_RC(shmipc_channel_recv_claim_positions(ch, slices, positions, 8, &count, 0, 0),
             SHMIPC_OK);
    CHECK(count == 3);
    CHECK(positions[0] == 0 && positions[1] == 16 && positions[2] == 16 + 2008);
    CHECK(slices[0].offset == 8 && slices[1].offset == 24 && slices[2].length == 5);
    CHECK_RC(shmipc_channel_recv_position(ch, &position), SHMIPC_OK);
    CHECK(position == 0);
    CHECK_RC(shmipc_channel_recv_claim_positions(ch, slices, positions, 8, &count, 0, 0),
             SHMIPC_EINVAL); /* one claim per handle */
    shmipc_channel_recv_abort(ch);
    CHECK_RC(shmipc_channel_recv_position(ch, &position), SHMIPC_EINVAL);

    /* aborted: another handle claims the same messages at the same positions, in parts */
    CHECK_RC(shmipc_channel_recv_claim_positions(other, slices, positions, 1, &count, 0, 0),
             SHMIPC_OK);
    CHECK(count == 1 && positions[0] == 0 && memcmp((char *)shmipc_channel_data(other) +
                                                    slices[0].offset, "first", 5) == 0);
    CHECK_RC(shmipc_channel_recv_commit(other), SHMIPC_OK);
    CHECK_RC(shmipc_channel_recv_claim_positions(other, slices, positions, 8, &count, 0, 0),
             SHMIPC_OK);
    CHECK(count == 2 && positions[0] == 16 && positions[1] == 2024);
    CHECK_RC(shmipc_channel_recv_position(other, &position), SHMIPC_OK);
    CHECK(position == 16);
    CHECK_RC(shmipc_channel_recv_commit(other), SHMIPC_OK);
    shmipc_channel_state(ch, &st);
    CHECK(st.read_position == 2040 && st.received == 3);

    /* past the end of the ring: a frame of 8 + 104 does not fit the 48 bytes left at 4048,
     * so a padding frame comes first; the message's position is before the padding, where
     * read_position stands when it is next */
    CHECK_RC(shmipc_channel_send(ch, big, sizeof big, 0, 0), SHMIPC_OK); /* 2040 -> 4048 */
    CHECK_RC(shmipc_channel_send(ch, big, 100, 0, 0), SHMIPC_OK);        /* 4048 -> 4208 */
    CHECK_RC(shmipc_channel_send(ch, "next", 4, 0, 0), SHMIPC_OK);       /* 4208 -> 4224 */
    shmipc_channel_state(ch, &st);
    CHECK(st.write_position == 4224);
    CHECK_RC(shmipc_channel_recv_claim_positions(ch, slices, positions, 8, &count, 0, 0),
             SHMIPC_OK);
    CHECK(count == 3 && positions[0] == 2040 && positions[1] == 4048 && positions[2] == 4208);
    CHECK(slices[1].offset == 8 && slices[1].length == 100); /* after the padding, at 0 */
    CHECK(memcmp((char *)shmipc_channel_data(ch) + slices[2].offset, "next", 4) == 0);
    CHECK_RC(shmipc_channel_recv_commit(ch), SHMIPC_OK);
    shmipc_channel_state(ch, &st);
    CHECK(st.read_position == 4224 && st.received == 6 && st.consumer_lock == 0);
    shmipc_channel_close(other);
    shmipc_channel_close(ch);
    puts("ok");
    return 0;
}

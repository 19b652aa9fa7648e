/*
 * Intrusive doubly linked lists: an element type with `prev` and `next`
 * pointers, and a head pointer (NULL when empty). Not thread-safe: the
 * caller holds the list's lock. Internal to the tree.
 */
#ifndef AS_UTIL_LIST_H
#define AS_UTIL_LIST_H

/* Insert node at the front of the list *headp (node->prev is NULL). */
#define AS_LIST_PUSH(headp, node)                                           \
    do {                                                                    \
        (node)->prev = NULL;                                                \
        (node)->next = *(headp);                                            \
        if (*(headp))                                                       \
            (*(headp))->prev = (node);                                      \
        *(headp) = (node);                                                  \
    } while (0)

/* Take node out of the list *headp. */
#define AS_LIST_REMOVE(headp, node)                                         \
    do {                                                                    \
        if ((node)->prev)                                                   \
            (node)->prev->next = (node)->next;                              \
        else                                                                \
            *(headp) = (node)->next;                                        \
        if ((node)->next)                                                   \
            (node)->next->prev = (node)->prev;                              \
    } while (0)

#endif

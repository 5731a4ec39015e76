import { escapeSlackText } from "../slack/format";

/**
 * Markdown (as clients write it) to Slack mrkdwn: **bold** and __bold__ →
 * *bold*, headings → bold lines, [label](url) → <url|label>, everything else
 * escaped so it cannot become a mention or a disguised link.
 */
export function markdownToMrkdwn(markdown: string): string {
  return escapeSlackText(markdown)
    .replace(/^#{1,6}\s+(.+)$/gm, "*$1*")
    .replace(/\*\*(.+?)\*\*/g, "*$1*")
    .replace(/__(.+?)__/g, "*$1*")
    .replace(/\[([^\]\n]+)\]\(((?:https?:\/\/|mailto:)[^\s)|]+)\)/g, "<$2|$1>");
}

/**
 * Hands a file to the browser's downloads. Under the page's CSP (no inline script, connect-src
 * 'self') the file is fetched with the bearer token by the caller and saved from a Blob URL
 * through a temporary `<a download>`; navigations are not governed by the CSP, so no `blob:`
 * source is needed. The URL is revoked once the download has surely started.
 */
export function saveFile(blob: Blob, fileName: string): void {
  const url = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = url;
  link.download = fileName;
  link.rel = 'noopener';
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

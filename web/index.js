// The start page: shows both windows side by side in two frames (each the real
// window page), keeps the frames and the two window links on the chosen user, and
// opens both windows side by side on request.

const input = document.getElementById('user');
const links = [document.getElementById('link1'), document.getElementById('link2')];
const frames = [document.getElementById('frame1'), document.getElementById('frame2')];

const initial = new URLSearchParams(location.search).get('user');
if (initial && /^\d+$/.test(initial) && Number(initial) > 0) input.value = initial;

function userId() {
  return /^\d+$/.test(input.value) && Number(input.value) > 0 ? input.value : '1';
}

const windowUrl = (n) => `/window/${n}/?user=${userId()}`;

/** The links follow every keystroke; they load nothing. */
function updateLinks() {
  links.forEach((link, i) => { link.href = windowUrl(i + 1); });
}

/**
 * The frames (and this page's address, so a reload keeps the user) follow a
 * committed choice only: Enter, the spinner, or leaving the field. Reloading
 * both windows on each digit typed would flash them for nothing.
 */
function updateFrames() {
  frames.forEach((frame, i) => {
    const url = windowUrl(i + 1);
    if (frame.getAttribute('src') !== url) frame.src = url;
  });
  const here = new URL(location.href);
  if (here.searchParams.get('user') !== userId()) {
    here.searchParams.set('user', userId());
    history.replaceState(null, '', here);
  }
}

input.addEventListener('input', updateLinks);
input.addEventListener('change', updateFrames);
document.getElementById('pick').addEventListener('submit', (event) => {
  event.preventDefault();
  updateFrames();
});
document.getElementById('open-both').addEventListener('click', () => {
  const width = Math.floor(screen.availWidth / 2);
  const height = Math.min(screen.availHeight, 640);
  window.open(links[0].href, 'window1', `popup,width=${width},height=${height},left=0,top=0`);
  window.open(links[1].href, 'window2', `popup,width=${width},height=${height},left=${width},top=0`);
});
updateLinks();
if (initial !== null) updateFrames();
